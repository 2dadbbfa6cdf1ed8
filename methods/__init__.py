"""Built-in method plugins: one file per method, found automatically by ``kdbench.registry``."""
