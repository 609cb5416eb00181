"""The economic calendar (issue 20): ForexFactory-style JSON, XML and CSV, and iCalendar files or URLs,
imported once or fetched on a schedule, become ``news`` events that the news rules read."""
