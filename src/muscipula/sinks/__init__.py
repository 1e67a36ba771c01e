"""Where incidents are written: logsql (SQLite), JSON lines, hpfeeds."""
