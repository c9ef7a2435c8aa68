"""Generated media: video jobs (stored in SQLite, run in the background) and MP4 encoding."""
