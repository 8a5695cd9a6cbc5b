"""Marketing lists: membership and suppression kept by the list processor, and the list API."""
