"""The pure core: no I/O, no clock, no database, no asyncio. Everything time-related takes `now`."""
