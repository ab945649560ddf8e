"""One module per subcommand group; each defines ``register(subparsers)``. Heavy imports go inside handlers."""
