"""Training recipes: each one readable top to bottom (load -> method -> data -> train -> save -> register)."""
