"""Shared fixtures live in tests/support/; each module there owns one real part."""

pytest_plugins = [
    "tests.support.s3",
    "tests.support.exchange",
    "tests.support.kube",
    "tests.support.runs",
    "tests.support.operator",
    "tests.support.prometheus",
    "tests.support.images",
]
