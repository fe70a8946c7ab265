"""What leaves the map: labeled clouds and instance tables (export), and map files
(persistence). Plain numpy and torch; no knowledge of the mapper."""
