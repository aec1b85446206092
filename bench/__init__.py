"""labgate's benchmark: labgate beside a bare aiohttp proxy, against one fast upstream."""
