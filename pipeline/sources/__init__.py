"""Where data comes from: pinned registry packages (the demo), the Hugging Face hub (the
paper presets), and the tag tables that map a source's labels into ours. Only the download
stage (and the e5 model source) read these; training reads data/ through pipeline/formats."""
