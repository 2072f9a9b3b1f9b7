"""The Evotic API: typed models of its answers and the HTTP client that fetches them."""
