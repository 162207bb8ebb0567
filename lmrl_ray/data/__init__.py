"""The data currency: one trajectory schema, the replay store, and offline data generation."""
