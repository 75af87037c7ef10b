"""The rights check (issue 16): a short guided form computed by OpenFisca-France in a
process pool (see DESIGN.md)."""
