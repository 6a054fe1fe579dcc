"""Where data comes from: pinned registry packages (the demo), the Hugging Face hub (the
paper presets), the authors' released diffs (published.py), and the tag tables that map a
source's labels into ours. Only the download, prepare-model and import stages read these;
training reads data/ through pipeline/formats."""
