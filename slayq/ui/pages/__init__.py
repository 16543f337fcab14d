"""The dashboard's pages, one module per page (or per family of small listings)."""
