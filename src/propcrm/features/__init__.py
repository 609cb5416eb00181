"""The outer ring, by feature: each feature's service, routes, pages and queries side by side (GUIDE §1)."""
