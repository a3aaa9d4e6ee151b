"""Client-side encryption: key providers (who holds the KEKs), keyrings and sealing."""
