"""The experiment (section 4): the grid of model variants, and the paper's protocol at a training budget on the same stage functions."""
