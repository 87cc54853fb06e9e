"""Real-browser tests of the web page."""
