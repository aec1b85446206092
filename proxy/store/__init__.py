"""Token state shared by workers and replicas: one interface, three backends."""
