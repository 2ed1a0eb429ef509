"""meshkit: the runtime every service of the mesh is built on."""
