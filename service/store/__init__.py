"""Storage: the narrow tier interface, the tiers, and the tiered store that owns policy."""
