"""What the tests stand on: fixtures that start real local servers, test servers and proxies, shared run helpers."""
