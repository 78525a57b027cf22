"""Catalog's HTTP API (CONTRACT section 3): products in, products with their availability out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, StringConstraints
from sqlalchemy import select

from skuflow.catalog import domain
from skuflow.catalog.db import products
from skuflow.platform.auth import Principal, require_scope
from skuflow.platform.db import utc
from skuflow.platform.identifiers import Identifier
from skuflow.platform.pagination import DEFAULT_LIMIT, MAX_LIMIT, Cursor, Limit, decode_cursor, page
from skuflow.platform.text import a_plain_text
from skuflow.platform.web import runtime_of


def _valid_price(text: str) -> str:
    domain.parse_price(text)  # raises ValueError naming the problem
    return text


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {"name": "Blue mug", "price": "19.90"}})
    # Surrounding blanks are dropped, so a name of blanks only is refused as empty. The name goes into email
    # subjects: no line breaks or control characters (platform/text.py).
    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(a_plain_text)
    ]
    price: Annotated[
        StrictStr,  # a JSON number is refused: money does not pass through a float
        AfterValidator(_valid_price),
        Field(
            description="A decimal as a string: at least 0, at most 2 decimal places and 10 digits before the point",
            examples=["19.90"],
        ),
    ]


class Product(BaseModel):
    sku: Identifier
    name: str
    price: str = Field(description='Always with 2 decimals, e.g. "19.90"')
    available: bool
    availability_revision: int = Field(description="Inventory's revision this availability was read at (0: never)")
    availability_checked_at: datetime | None


class ProductPage(BaseModel):
    items: list[Product]
    next_cursor: str | None


router = APIRouter(prefix="/v1", tags=["catalog"])
CatalogWriter = Annotated[Principal, Depends(require_scope("catalog:write"))]


@router.put("/products/{sku}", response_model=Product, summary="Create or replace a product's name and price")
async def put_product(sku: Identifier, body: ProductIn, request: Request, _: CatalogWriter) -> dict[str, Any]:
    """Sets the name and price; never touches the availability, which comes from inventory."""
    db = runtime_of(request).db
    statement = db.insert(products).values(
        sku=sku, name=body.name, price=domain.parse_price(body.price), updated_at=datetime.now(UTC)
    )
    statement = statement.on_conflict_do_update(
        index_elements=[products.c.sku],
        set_={
            "name": statement.excluded.name,
            "price": statement.excluded.price,
            "updated_at": statement.excluded.updated_at,
        },
    )
    async with db.transaction() as session:
        await session.execute(statement)
        row = (await session.execute(select(products).where(products.c.sku == sku))).one()
    return _view(row)


@router.get(
    "/products/{sku}",
    response_model=Product,
    summary="A product and whether it is available",
    responses={404: {"description": "no product with this SKU"}},
)
async def get_product(sku: Identifier, request: Request) -> dict[str, Any]:
    """Public."""
    async with runtime_of(request).db.reading() as session:
        row = (await session.execute(select(products).where(products.c.sku == sku))).first()
    if row is None or row.name is None:  # availability known, product not created yet: not a product
        raise HTTPException(404, f"unknown product {sku!r}")
    return _view(row)


@router.get("/products", response_model=ProductPage, summary="Products by SKU, optionally by availability")
async def list_products(
    request: Request,
    available: Annotated[
        bool | None, Query(description="Only the available (true) or unavailable (false) ones")
    ] = None,
    sku: Annotated[
        list[Identifier] | None,
        Query(
            max_length=MAX_LIMIT,
            description=f"Only these SKUs (repeat the parameter, at most {MAX_LIMIT}); unknown ones are left out. "
            "How users asks the product names of a batch of emails at once.",
        ),
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Public. Sorted by SKU; follow `next_cursor` for the next page."""
    after = decode_cursor(cursor)
    query = select(products).where(products.c.name.is_not(None)).order_by(products.c.sku).limit(limit + 1)
    if after is not None:
        query = query.where(products.c.sku > after)
    if sku is not None:
        query = query.where(products.c.sku.in_(set(sku)))
    if available is not None:
        query = query.where(products.c.available == available)
    async with runtime_of(request).db.reading() as session:
        rows = (await session.execute(query)).all()
    return page([_view(row) for row in rows], limit, "sku")


def _view(row: Any) -> dict[str, Any]:
    return {
        "sku": row.sku,
        "name": row.name,
        "price": domain.format_price(row.price),
        "available": row.available,
        "availability_revision": row.availability_revision,
        "availability_checked_at": utc(row.availability_checked_at) if row.availability_checked_at else None,
    }
