"""The built-in demo sources: seeded LAION-shaped images and short captioned clips with planted bad inputs."""
