"""What only the book needs: the claims of the papers, their verdicts and the ledger that collects them."""
