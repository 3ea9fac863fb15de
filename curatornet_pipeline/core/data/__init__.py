"""The data (paper section 4.1): the published UGallery files, imported vectors, incoming batches and their history, and the synthetic generator."""
