from skuflow.service_client import explain as _explain


def test_a_validation_error_reads_as_one_line_naming_the_item():
    body = {"detail": [{"loc": ["body", "items", 0, "on_hand"], "msg": "Input should be >= 0", "input": -5}]}
    assert _explain(body) == "items[0].on_hand: Input should be >= 0 (got -5)"


def test_other_errors_show_their_detail_or_description():
    assert (
        _explain({"detail": "this token lacks the scope 'stock:write'"}) == "this token lacks the scope 'stock:write'"
    )
    assert _explain({"error": "invalid_client", "error_description": "bad secret"}) == "bad secret"
