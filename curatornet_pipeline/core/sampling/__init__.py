"""Training triples (section 3.2): the six sampling guidelines and uniform random sampling."""
