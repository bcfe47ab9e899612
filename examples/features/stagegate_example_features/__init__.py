"""Example custom features for Stagegate: `causal` (use these as a pattern) and `leaky` (two
look-ahead mistakes that Stagegate's guard refuses)."""
