"""Helpers shared by the tests (servers, fault proxies, small builders); not test modules."""
