"""What runs inside the servers: the shared batch loop and the loading of a packaged handler."""
