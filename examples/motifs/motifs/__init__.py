"""An example distgfn task outside the package: see motifs.task."""
