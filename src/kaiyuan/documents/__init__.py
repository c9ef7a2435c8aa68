"""The local document index the agent searches: ``ingest`` reads files into text chunks with
positions, ``index`` stores them in SQLite (FTS5 for BM25, float32 vectors from the bundled
MiniLM) and ranks hits by reciprocal-rank fusion of both."""
