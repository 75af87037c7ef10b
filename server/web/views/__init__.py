"""One module per page family; views stay thin and call the domain modules."""
