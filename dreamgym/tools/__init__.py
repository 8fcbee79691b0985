"""Tools around the library, each a command line: ``play`` (a window on an env), ``record`` (dream vs reality
videos), ``model_card`` (a bundle's card and its ``pictures``). The library core never imports them."""
