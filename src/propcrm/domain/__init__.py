"""Pure domain: money, events, rule packs, account state, rules and decisions. No I/O here."""
