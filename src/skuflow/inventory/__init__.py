"""The inventory service: stock numbers per warehouse and SKU in, availability for sale out."""
