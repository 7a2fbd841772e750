#include <stdio.h>
int main(void) { puts("relayhost " RELAYHOST_VERSION); return 0; }
