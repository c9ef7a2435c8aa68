"""Generated media: video jobs (stored in SQLite, run in the background), MP4 encoding, and the
images the server keeps with their settings (gallery.py)."""
