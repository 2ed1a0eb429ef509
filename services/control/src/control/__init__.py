"""Control: Namespace resources (mesh.control.v1)."""
