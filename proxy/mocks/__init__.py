"""Mock appliances: faithful stand-ins for the vendor APIs labgate fronts, for tests and the demo."""
