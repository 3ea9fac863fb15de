"""The evaluation split (section 4.3): each user's last basket held out for test, one more for validation."""
