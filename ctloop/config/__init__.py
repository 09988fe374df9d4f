"""Configuration: the typed settings and the state home they point at."""
