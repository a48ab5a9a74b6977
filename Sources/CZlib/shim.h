// zlib for dummy-client's HdrHistogram codec (the compressed V2 encoding is zlib-deflated).
#include <zlib.h>
