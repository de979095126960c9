"""The files of claimbench's training code (the modules the loop and the loaders import), comma
separated: what ``make golden`` measures its coverage of."""

from claimbench.cache.keys import PACKAGE_DIR, _module_path, training_modules

if __name__ == "__main__":
    print(",".join(str(_module_path(m, PACKAGE_DIR)) for m in training_modules()))
