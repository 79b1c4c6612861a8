"""Helpers shared by the tests: fixtures data, harnesses for real processes, builders."""
