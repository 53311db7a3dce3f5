"""What difymaint knows about Dify itself: its tables (real names, columns, indexes) and its cascades."""
