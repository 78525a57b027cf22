"""The catalog service: products (name, price) and whether each is available for sale."""
