"""Reading sources: manifest discovery, format detection and one parser module per format."""
