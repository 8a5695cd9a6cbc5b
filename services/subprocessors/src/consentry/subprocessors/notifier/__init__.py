"""The notifier worker (faust): erasure requests and consent withdrawals become
deliveries; the sender posts them as signed webhooks."""
