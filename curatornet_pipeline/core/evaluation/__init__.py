"""Evaluation (section 4.4): AUC, Recall, Precision, nDCG over full rankings, Table 2 and Figure 3."""
