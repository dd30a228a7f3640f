"""The HTTP front end (FastAPI on uvicorn): translates JSON <-> core types, maps errors."""
