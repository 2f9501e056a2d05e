"""Models, relaxations, engines and clusters that write calculations (above materials)."""
