"""The use-case layer: one function per operation (options dataclass in, report dataclass out).

Use cases combine the pure logic and the I/O adapters; they never print. The CLI parses, calls one, renders.
"""
