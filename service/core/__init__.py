"""The serving core: registry, row codec, bundle assembly. Front ends call only this."""
